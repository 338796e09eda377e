"""Stage 2, preparation: from case files to what a network reads (chapters 3 to 5).

* :mod:`~prostseg.preparation.preprocessing`: intensity and geometry steps on arrays;
* :mod:`~prostseg.preparation.registration`: DWI and ADC onto the T2W grid (elastix);
* :mod:`~prostseg.preparation.slices`: volumes to network slices and back, once for
  every kind of model (the NumPy half of the input pipelines);
* :mod:`~prostseg.preparation.splits`: patient-level training, validation and test splits;
* :mod:`~prostseg.preparation.slice_cache`: prepared slices written to disk once
  (``prostseg prepare``);
* :mod:`~prostseg.preparation.pipeline`: the ``tf.data`` streams of prepared slices,
  with augmentation.

Imports: :mod:`prostseg.data` and the plumbing (:mod:`prostseg.errors`,
:mod:`prostseg.atomic`, :mod:`prostseg.parallel`). TensorFlow only in ``pipeline``
(and in the functions of ``slice_cache`` that read and write TFRecord files), itk only
inside the functions of ``registration`` that register.
"""
