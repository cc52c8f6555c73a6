"""certmgr's date formats (``FORMAT_MODULE_PATH``): one format everywhere, ISO-like with seconds and the
time zone, ``2026-12-02 14:37:05 UTC``, instead of the locale's ``Dec. 2, 2026, 2:37 p.m.``."""
