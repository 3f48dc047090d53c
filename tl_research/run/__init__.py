"""One run: trainer (its public face: run, RunResult), setup, steps (the compiled steps and their specs),
state (what the host keeps across steps and resumes), loop (Training); the feature cache, features of a
trained model, the LR range test."""
