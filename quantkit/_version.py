"""quantkit's version, in a module of its own so that modules inside the package can read it without
importing the package face (:mod:`quantkit`), which would make import cycles."""

__version__ = "0.1.0"
