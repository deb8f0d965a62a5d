"""The ``regard`` command line. Each module here contributes commands via a ``commands`` list."""
