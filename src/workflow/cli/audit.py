"""``workflow audit``: read, export and verify the audit trail; sign checkpoints, prove and
check (without a database), cosign.

Each command makes one Engine call (``audit_log``, ``verify``, ``digest``, ``denials``) and
prints the result; the CSV file is the library's (workflow.audit.export), so a download from
the web pages is the same file, and ``verify --digest`` reads the digest file with
workflow.audit.chain.read_digest first.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from workflow.cli.context import Context, be_option, json_errors, json_option, pass_ctx
from workflow.cli.render import (
    emit_json,
    event_view,
    say,
    show_evidence,
    show_time,
    table,
    write_bytes,
)
from workflow.errors import FileRefused, UsageError

if TYPE_CHECKING:
    from workflow.audit.note import Signer, Verifier


class _JobsType(click.ParamType[Any, Any]):
    """``--jobs``: ``auto`` (None: one per CPU when it pays) or a whole number from 1."""

    name = "auto|N"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or value == "auto":
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = int(str(value), 10)
            except ValueError:
                self.fail(f"{value!r} is neither auto nor a whole number", param, ctx)
        if number < 1:
            self.fail(f"{number} is below 1", param, ctx)
        return number


@click.group()
def audit() -> None:
    """Read and verify the audit trail."""


@audit.command("log")
@click.option("--actor", help="Only events by this actor.")
@click.option("--program", help="Only events of this program.")
@click.option("--area", help="Only events of instances in this area (and inside it).")
@click.option("--instance", type=int, help="Only events of this instance.")
@click.option(
    "--since",
    help="Recorded from this date (YYYY-MM-DD, CE or BE, UTC) or ISO timestamp.",
)
@click.option(
    "--until",
    help="Recorded up to and including this date, or before this ISO timestamp.",
)
@click.option(
    "--date-from",
    help="Only events whose evidence date (the day it happened) is on or after this date "
    "(CE or BE).",
)
@click.option(
    "--date-to",
    help="Only events whose evidence date is on or before this date (CE or BE).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
    callback=json_errors,
    help="json also prints errors as a JSON object on stderr.",
)
@be_option
@pass_ctx
def audit_log(
    c: Context,
    actor: str | None,
    program: str | None,
    area: str | None,
    instance: int | None,
    since: str | None,
    until: str | None,
    date_from: str | None,
    date_to: str | None,
    fmt: str,
    be: bool,
) -> None:
    """Events across instances, in the order they were recorded.

    --since/--until filter on when an event was recorded; --date-from/--date-to on the
    evidence date, the day the activity happened."""
    events = c.engine().audit_log(
        actor=actor,
        program=program,
        area=area,
        since=since,
        until=until,
        instance=instance,
        date_from=date_from,
        date_to=date_to,
    )
    if fmt == "json":
        emit_json([e.to_dict() for e in events])
    elif fmt == "csv":
        from workflow.audit.export import csv_bytes

        write_bytes(csv_bytes(events))
    else:
        event_view(
            [
                "at (UTC)",
                "instance",
                "seq",
                "program",
                "area",
                "trigger",
                "actor",
                "role",
                "evidence",
            ],
            [
                (
                    show_time(e.at, be),
                    e.instance,
                    e.seq,
                    e.program,
                    e.area,
                    e.trigger,
                    e.actor,
                    e.role,
                    show_evidence(dict(e.evidence), be),
                )
                for e in events
            ],
            text={"evidence"},
        )


@audit.command("verify")
@click.option(
    "--digest",
    "digest_file",
    type=click.Path(dir_okay=False),
    help="Also prove nothing this digest (from `audit digest`) covered was removed or changed.",
)
@click.option(
    "--checkpoint",
    "checkpoint_file",
    type=click.Path(dir_okay=False),
    help="Also prove the log extends this checkpoint (or a proof bundle's): consistency.",
)
@click.option(
    "--public-key",
    "public_key",
    type=click.Path(dir_okay=False),
    help="Check the checkpoint's signature with this public key (PREFIX.pub).",
)
@click.option(
    "--jobs",
    type=_JobsType(),
    default="auto",
    show_default=True,
    help="Processes re-hashing the chains, this one included (auto: one per CPU on a "
    "database of 10,000 instances or more; 1: all in this process). The answer is the same.",
)
@json_option
@pass_ctx
def audit_verify(
    c: Context,
    digest_file: str | None,
    checkpoint_file: str | None,
    public_key: str | None,
    jobs: int | None,
    as_json: bool,
) -> None:
    """Re-compute every hash chain; exit 1 naming the first broken event.

    With --checkpoint, also prove the current log of every audit entry extends the tree the
    checkpoint signed, and that every entry is still the one the log holds; exit 1 naming
    the first entry that differs."""
    from workflow.audit.chain import read_digest

    digest = read_digest(digest_file) if digest_file is not None else None
    consistency = None
    if checkpoint_file is not None:
        key = _verifier(public_key) if public_key is not None else None
        data = _read(checkpoint_file, "checkpoint", 64 * 1024 * 1024)
        consistency = c.engine().verify_checkpoint(data, key)
    elif public_key is not None:
        raise click.UsageError("--public-key checks a --checkpoint's signature: give both")
    result = c.engine().verify(digest, jobs)
    ok = result.ok and (consistency is None or consistency.ok)
    if as_json:
        out = result.to_dict()
        if consistency is not None:
            out["ok"] = ok
            out["checkpoint"] = consistency.to_dict()
        emit_json(out)
    else:
        for n in result.non_bundled:
            click.echo(
                f"note: instance {n.instance} runs {n.program} v{n.program_version} "
                f"from {n.source}, not a bundled definition"
            )
        what = " and the digest" if result.digest_checked else ""
        if result.ok:
            say(
                f"ok: {result.events_checked} events of {result.instances_checked} "
                f"instances verified{what}"
            )
        else:
            for p in result.problems:
                if p.instance is not None:
                    where = f"instance {p.instance} seq {p.seq}"
                else:  # the reason says which chain: "grants:", "denials:", "keys:" or none
                    where = "trail" if p.seq is None else f"trail seq {p.seq}"
                say(f"BROKEN {where}: {p.reason}")
            say(
                f"{len(result.problems)} problem(s) in {result.events_checked} events of "
                f"{result.instances_checked} instances"
            )
        if consistency is not None:
            signed = "signed " if consistency.signature_checked else ""
            if consistency.ok:
                say(
                    f"ok: the log ({consistency.tree_size} entries) extends the {signed}"
                    f"checkpoint of {consistency.checkpoint_size} entries"
                )
            for lp in consistency.problems:
                leaf = f"leaf {lp.leaf}: " if lp.leaf is not None else ""
                say(f"BROKEN {leaf}{lp.entry}: {lp.reason}")
    if not ok:
        sys.exit(1)


@audit.command("denials")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many.")
@json_option
@pass_ctx
def audit_denials(c: Context, limit: int | None, as_json: bool) -> None:
    """Attempts refused for want of a permission: who, what, when, why."""
    found = c.engine().denials(limit)
    if as_json:
        emit_json([d.to_dict() for d in found])
        return
    table(
        None,
        ["at (UTC)", "actor", "role", "action", "instance", "program", "area", "reason"],
        [
            (
                show_time(d.at, False),
                d.actor,
                d.role,
                d.action,
                d.instance or "",
                d.program,
                d.area,
                d.reason,
            )
            for d in found
        ],
    )


@audit.command("digest")
@pass_ctx
def audit_digest(c: Context) -> None:
    """Print a JSON digest of the whole trail for a later `audit verify --digest`."""
    emit_json(c.engine().digest().to_dict())


# --------------------------------------------------------------------------- proofs

_KEY_LIMIT = 64 * 1024


def _read(path: str, what: str, limit: int) -> bytes:
    """A regular file's bytes, at most ``limit`` (UsageError, exit 2, otherwise)."""
    from workflow.runtime.files import read_regular_file

    try:
        return read_regular_file(path, limit)
    except FileRefused as e:
        raise UsageError(f"cannot read {what} {path}: {e.reason}") from None


def _text(path: str, what: str, limit: int = _KEY_LIMIT) -> str:
    try:
        return _read(path, what, limit).decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{what} {path} is not UTF-8 text") from None


def _verifier(path: str) -> Verifier:
    from workflow.audit.note import NoteError, Verifier

    try:
        return Verifier.parse(_text(path, "public key"))
    except NoteError as e:
        raise UsageError(f"public key {path}: {e}") from None


def _signer(path: str) -> Signer:
    from workflow.audit.note import NoteError, Signer

    try:
        return Signer.parse(_text(path, "key"))
    except NoteError as e:
        raise UsageError(f"key {path}: {e}") from None


def _write_new(path: Path, text: str, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise UsageError(f"{path} exists already (not overwritten)") from None
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror or e}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


@audit.command("keygen")
@click.option("--out", "prefix", required=True, help="Write PREFIX.key (private) and PREFIX.pub.")
@click.option(
    "--name",
    help="The key's name, e.g. a schema-less URL (default: HOST/workflow-audit, or "
    "HOST/workflow-witness with --witness). It is the checkpoints' origin by default.",
)
@click.option("--witness", is_flag=True, help="A witness's key, for `audit cosign`.")
def audit_keygen(prefix: str, name: str | None, witness: bool) -> None:
    """Make an Ed25519 key pair: PREFIX.key (mode 0600, keep it out of the database and
    its backups) and PREFIX.pub (publish it)."""
    from workflow.audit.note import COSIGNATURE, ED25519, NoteError, Signer

    host = socket.gethostname().split(".")[0] or "localhost"
    name = name or f"{host}/workflow-{'witness' if witness else 'audit'}"
    try:
        signer = Signer.generate(name, COSIGNATURE if witness else ED25519)
    except NoteError as e:
        raise UsageError(str(e)) from None
    key, pub = Path(prefix + ".key"), Path(prefix + ".pub")
    if pub.exists():
        raise UsageError(f"{pub} exists already (not overwritten)")
    _write_new(key, signer.skey() + "\n", 0o600)
    _write_new(pub, signer.verifier.vkey() + "\n", 0o644)
    say(f"wrote {key} (private, mode 0600) and {pub}: {signer.verifier.vkey()}")


@audit.command("checkpoint")
@click.option(
    "--key",
    "key_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="The log's private key (from `audit keygen`).",
)
@click.option("--origin", help="The checkpoint's origin line (default: the key's name).")
@pass_ctx
def audit_checkpoint(c: Context, key_file: str, origin: str | None) -> None:
    """Print a signed checkpoint of the log of every audit entry so far (C2SP signed note)."""
    click.echo(c.engine().checkpoint(_signer(key_file), origin), nl=False)


@audit.command("prove")
@click.argument("instance", type=int)
@click.option(
    "--checkpoint",
    "checkpoint_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="The signed checkpoint to prove against.",
)
@click.option("--out", "out", type=click.Path(dir_okay=False), help="Write the bundle here.")
@pass_ctx
def audit_prove(c: Context, instance: int, checkpoint_file: str, out: str | None) -> None:
    """A proof bundle (JSON): the checkpoint and the instance's events, each with its
    leaf_index and inclusion_proof; exit 1 if the log no longer matches the checkpoint."""
    import json

    text = _text(checkpoint_file, "checkpoint", 1 << 20)
    bundle = c.engine().prove(instance, text)
    data = json.dumps(bundle, ensure_ascii=False, indent=1) + "\n"
    if out is None:
        click.echo(data, nl=False)
    else:
        try:
            Path(out).write_text(data, encoding="utf-8")
        except OSError as e:
            raise UsageError(f"cannot write {out}: {e.strerror or e}") from None
        say(f"wrote {out}: {len(bundle['events'])} events of instance {instance}")


@audit.command("check")
@click.argument("bundle_file", metavar="BUNDLE", type=click.Path(dir_okay=False))
@click.option(
    "--public-key",
    "public_key",
    required=True,
    type=click.Path(dir_okay=False),
    help="The log's public key (PREFIX.pub).",
)
@click.option(
    "--witness-key",
    "witness_keys",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="A witness's public key whose cosignature counts (repeat).",
)
@click.option(
    "--min-cosignatures",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Refuse unless this many of the witnesses cosigned.",
)
@click.option(
    "--previous",
    type=click.Path(dir_okay=False),
    help="An older bundle of the instance: its events must still be there unchanged.",
)
@json_option
def audit_check(
    bundle_file: str,
    public_key: str,
    witness_keys: tuple[str, ...],
    min_cosignatures: int,
    previous: str | None,
    as_json: bool,
) -> None:
    """Verify a proof bundle with no database: signatures, every inclusion proof, every
    link of the instance's chain. Exit 0 if it verifies, 1 if not."""
    from workflow.audit import bundle as proofs

    key = _verifier(public_key)
    witnesses = tuple(_verifier(w) for w in witness_keys)
    data = proofs.load(_read(bundle_file, "bundle", proofs.BUNDLE_LIMIT))
    old: Any = None
    if previous is not None:
        old = proofs.load(_read(previous, "bundle", proofs.BUNDLE_LIMIT))
    result = proofs.check(data, key, witnesses, min_cosignatures, old)
    if as_json:
        emit_json(result.to_dict())
    elif result.ok:
        cosigned = f", cosigned by {', '.join(result.cosigners)}" if result.cosigners else ""
        say(
            f"ok: {result.events} events of instance {result.instance} are in the log "
            f"{result.origin} of {result.tree_size} entries{cosigned}"
        )
    else:
        for p in result.problems:
            say(f"FAILED: {p}")
    if not result.ok:
        sys.exit(1)


@audit.command("cosign")
@click.argument("checkpoint_file", metavar="CHECKPOINT", type=click.Path(dir_okay=False))
@click.option(
    "--key",
    "key_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="The witness's private key (`audit keygen --witness`).",
)
@click.option("--name", required=True, help="The witness's name (its key's).")
@click.option(
    "--log-key",
    type=click.Path(dir_okay=False),
    help="Also check the log's signature with its public key.",
)
@pass_ctx
def audit_cosign(
    c: Context, checkpoint_file: str, key_file: str, name: str, log_key: str | None
) -> None:
    """Check the checkpoint is consistent with the last one this witness cosigned (kept in
    KEY's .state file beside it) and print it with the witness's cosignature added."""
    witness = _signer(key_file)
    if witness.name != name:
        raise UsageError(f"the key {key_file} is {witness.name!r}'s, not {name!r}")
    state = Path(key_file).with_suffix(".state")
    last = _text(str(state), "witness state", 1 << 20) if state.exists() else None
    text = _text(checkpoint_file, "checkpoint", 1 << 20)
    verifier = _verifier(log_key) if log_key is not None else None
    signed = c.engine().cosign(text, witness, last, verifier)
    tmp = state.with_suffix(".state.tmp")
    try:
        tmp.write_text(signed, encoding="utf-8")
        os.replace(tmp, state)
    except OSError as e:
        raise UsageError(f"cannot write {state}: {e.strerror or e}") from None
    click.echo(signed, nl=False)
