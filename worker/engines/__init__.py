"""Model runtimes behind one small interface (``base.Engine``)."""
