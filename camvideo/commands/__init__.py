"""The command line: argument definitions (:mod:`.args`), ``camvideo IN OUT`` and
``camvideo models`` (:mod:`.main`), ``camvideo live`` (:mod:`.live`) and ``camvideo
batch`` (:mod:`.batch`), and the terminal (:mod:`.terminal`). Only this package owns the terminal, the flags' names and exit
codes; nothing in the library imports it."""
