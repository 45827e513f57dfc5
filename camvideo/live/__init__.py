"""``camvideo live``: a live session (:mod:`.session`), its window (:mod:`.window`) and
its browser preview (:mod:`.preview`)."""
