"""Video in and out with PyAV: frames and their timing (:mod:`.frames`), files
(:mod:`.files`), live sources (:mod:`.sources`, :mod:`.streams`), encoding with the
input's timing (:mod:`.sink`, :mod:`.encoding`) and its audio (:mod:`.audio`). Nothing
here knows about models."""
