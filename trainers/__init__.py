"""`python -m trainers.<task>`: corpus loading, input pipeline, fit, evaluate, save.

- `trainers.translate`: Spanish <-> English translation (BLEU and chrF on the test split).
- `trainers.sentiment`: IMDB sentiment classification.
- `trainers.generate`: the character-level Shakespeare language model.
- `trainers.pretrain`: the sentiment encoder pretrained as forward and backward language models of
  the training and unlabelled reviews (`models.review_lm`).
- `trainers.gradients`: the gradient-flow lab (plots and results.json, no saved model).
- `trainers.cli`: flags made from a trainer's config, the `--out`/`--model`/`--evaluate` rules and
  one-line errors.
- `trainers.training`: the shared fit (`TrainingRun`: seed, checkpoints, devices, Adam with cosine
  decay, fit, best weights, card, save) and the shared training fields of the configs.
- `trainers.checkpoints`: `RunCheckpoints` (checkpoints, `--resume`, the card's training record).
- `trainers.data`: corpora through the Keras cache, deduplication, leak-free splits.
- `trainers.batching`: length-bucketed batches and `fit_input`, the one way batches reach `fit`.
- `trainers.devices`: `--rnn-impl`, `--precision` and `--data-parallel`.
- `trainers.allocator`: glibc's `malloc` set to reuse freed memory (a step's large buffers without
  page faults), applied by every trainer's `cli.run` and the benchmarks.
- `trainers.cluster`: training with several processes (one or more machines) on each backend's
  own engine: `--processes --process-index --coordinator`, or torchrun, SLURM or `TF_CONFIG`.
- `trainers.launch`: `python -m trainers.launch --processes N -- TASK ...`, N local processes.
- `trainers.word_vectors`: PPMI-SVD word vectors (the sentiment embedding's start).
- `trainers.ngram_teacher`: logistic regression on NB-weighted n-grams (self-training's second opinion).
- `trainers.subwords`: the translator's SentencePiece models, learnt on the training split.
- `trainers.averaging`: tail weight averaging (sentiment and translation).
- `trainers.export`: `python -m trainers.export`, a saved model as ONNX graphs (float32 and int8),
  Keras int8 and a TensorFlow SavedModel, for serving without Keras (`runtime`).
"""
