"""``camvideo batch``: the files of a folder tree and their outputs (:mod:`.files`), one
file's job and the batch's records (:mod:`.jobs`), running them on this machine
(:mod:`.runner`) or on a Ray cluster (:mod:`.ray_backend`)."""
