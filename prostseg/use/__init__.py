"""Stage 4, use: applying, evaluating, comparing and shipping a trained model (chapters 7, 8, 11 and 13).

* :mod:`~prostseg.use.inference`: a model file or object applied to volumes and cases,
  and folders of predictions scored;
* :mod:`~prostseg.use.postprocessing`: clean-up of predicted label maps;
* :mod:`~prostseg.use.batch`: ``prostseg predict`` over many cases, resumable;
* :mod:`~prostseg.use.export`: SavedModel and ONNX files that carry their preprocessing
  contract, and loading any model file;
* :mod:`~prostseg.use.dicom_seg`: predictions as DICOM SEG objects;
* :mod:`~prostseg.use.detection`: lesion-level detection metrics;
* :mod:`~prostseg.use.model_comparison`: the U-Net and Pix2Pix side by side;
* :mod:`~prostseg.use.model_card`: ``MODEL_CARD.md`` of a run folder.

Imports: :mod:`prostseg.data`, :mod:`prostseg.preparation`, :mod:`prostseg.networks`,
the plumbing and the figures (:mod:`prostseg.viz`); never :mod:`prostseg.training`.
"""
