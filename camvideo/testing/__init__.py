"""Clips with known ground truth for tests, benchmarks and samples: real photos panned,
zoomed and cut (:mod:`.synth`), written with exact timing and audio (:mod:`.clip`)."""
