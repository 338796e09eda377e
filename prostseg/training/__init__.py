"""Stage 5, training: the training loop and what it needs around it (chapters 7, 10 and 12).

* :mod:`~prostseg.training.loop`: ``train_unet`` and ``train_pix2pix``, one custom
  loop under a ``tf.distribute`` strategy;
* :mod:`~prostseg.training.checkpoints`: resumable checkpoints and the best model,
  written whole;
* :mod:`~prostseg.training.datacheck`: every file a run reads, checked before it starts.

Imports: every stage below it. It is the last stage because a finished run writes its
model card (:mod:`prostseg.use.model_card`), which scores the test cases with
:mod:`prostseg.use.inference`.
"""
