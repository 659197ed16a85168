"""The commands that open a run (``search``, ``study``, ``train``) and the cost planner (``plan``):
the top of the import graph below the command line (commands -> search -> ...)."""
