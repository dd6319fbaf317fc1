"""From recordings to training data: input representations, the dataset manifest, prepare and the segment dataset."""
