"""Notifications (CONTRACT §10): receivers (hooks), the outbox and its delivery.

* ``hooks``: add, list and remove receivers: a webhook ``http(s)://`` URL or ``mailto:``.
* ``deliver``: the delivery worker: leases due outbox rows, POSTs ``{event, instance}`` with
  ``Workflow-Event-Id`` and ``Workflow-Signature`` (or sends an e-mail over SMTP), retries
  with exponential backoff and jitter, marks a delivery dead after ``max_attempts``.

The outbox rows themselves are written by the database, in each event's own transaction
(revision 0010's trigger); Python listeners for embedding applications are
``Engine.on_commit``.
"""

from workflow.notify.deliver import Delivery, DeliveryStats, Notifications, sign

__all__ = ["Delivery", "DeliveryStats", "Notifications", "sign"]
