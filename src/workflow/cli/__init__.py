"""The ``workflow`` command: parse, call the library, render. Only this package imports click."""
