"""The network side: which models exist and how they load (:mod:`.registry`), the
CAM-ready model (:mod:`.cammodel`), checkpoints and labels (:mod:`.weights`), where and
in what precision it runs (:mod:`.device`), how it is made fast for inference
(:mod:`.rewrite`, :mod:`.trace`, :mod:`.quantize` for int8), and the on-disk cache that
lets a second run skip building it (:mod:`.cache`, :mod:`.stored`)."""
