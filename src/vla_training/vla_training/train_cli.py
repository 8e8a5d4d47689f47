"""Placeholder for the ``ros2 run vla_training train`` entry point (declared in setup.py); not written yet."""


def main(argv=None):
    """Raises SystemExit: the module is not implemented yet."""
    raise SystemExit('not yet implemented')


if __name__ == '__main__':
    main()
