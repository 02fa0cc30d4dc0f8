"""`python -m trainers.<task>`: corpus loading, input pipeline, fit, evaluate, save.

- `trainers.data`: corpora through the Keras cache, deduplication, leak-free splits.
- `trainers.cli`: the shared flags, callbacks and one-line errors.
- `trainers.translate`: the translator.
"""
