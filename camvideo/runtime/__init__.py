"""Running a model over a stream of frames: the device stage (:mod:`.engine`) and the
threads and bounded queues that overlap decoding, inference, rendering and output
(:mod:`.pipeline`)."""
