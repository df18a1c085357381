"""Private implementation of lionx; import from :mod:`lionx` instead."""
