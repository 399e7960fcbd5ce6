"""The app layer on top: the ``parley`` command and its subcommands, the wiring of the
adapters a config enables, the ops server, ``parley doctor``, ``parley report``, logging.
It may import anything; nothing below imports it."""
