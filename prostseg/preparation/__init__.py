"""Stage 2, preparation: from case files to what a network reads (chapters 3 to 5).

* :mod:`~prostseg.preparation.preprocessing`: intensity and geometry steps on arrays;
* :mod:`~prostseg.preparation.registration`: DWI and ADC onto the T2W grid (elastix);
* :mod:`~prostseg.preparation.slices`: volumes to network slices and back (the NumPy
  half of the input pipelines);
* :mod:`~prostseg.preparation.splits`: patient-level training, validation and test splits;
* :mod:`~prostseg.preparation.slice_cache`: prepared slices written to disk once
  (``prostseg prepare``);
* :mod:`~prostseg.preparation.pipeline`: the ``tf.data`` streams of prepared slices,
  with augmentation.
"""
