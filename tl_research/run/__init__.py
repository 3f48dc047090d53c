"""One run: the trainer (setup, compiled steps, loop), the feature cache, features of a trained model, the LR range test."""
