"""The ``meshlib control-plane`` / ``bootstrap`` / ``status`` commands as subprocesses."""
