"""The ``stitch_emulator`` pytest fixture, registered through the ``pytest11`` entry point."""
