"""The Engine: the one object an application holds to start, fire, read and audit instances.

``facade`` wires it; ``requests`` holds what a caller asks, ``commands`` the changes (all through
the one write path of ``unit_of_work``), ``queries`` the reads, ``compiled`` the program versions
instances run on."""
