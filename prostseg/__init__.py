"""prostseg: prostate MRI segmentation with U-Net and Pix2Pix, taught in a Jupyter book.

The package holds everything the book's chapters run, one subpackage per stage, in
the order of the book; each imports only from the stages before it:

1. :mod:`prostseg.data` -- cases on disk and in memory: volumes, the case layout,
   phantoms, public datasets;
2. :mod:`prostseg.preparation` -- preprocessing, registration, network slices, patient
   splits and the ``tf.data`` streams;
3. :mod:`prostseg.networks` -- the models, losses, metrics, one recipe per kind of
   model and the run folder;
4. :mod:`prostseg.use` -- inference, evaluation, export, DICOM SEG, model cards;
5. :mod:`prostseg.training` -- the training loop, checkpoints and data checks.

Below every stage sits the plumbing (:mod:`prostseg.errors`, :mod:`prostseg.atomic`,
:mod:`prostseg.console`, :mod:`prostseg.parallel`, :mod:`prostseg.figure_png`); the figures (:mod:`prostseg.viz`)
draw on the first three stages and serve the later ones; :mod:`prostseg.cli` is the
command line, and :mod:`prostseg.book` the chapters' teaching helpers, which nothing
else imports. TensorFlow is imported only by the modules that need it.
"""

import os

__version__ = "0.1.0"

# oneDNN's CPU kernels train the U-Net 1.4 to 2 times as fast as TensorFlow's Eigen
# kernels (benchmarks/training_throughput.py). TensorFlow turns them on by
# default only on some CPUs and reads this variable once, when it starts: ask for them
# here, unless the user has chosen (TF_ENABLE_ONEDNN_OPTS=0 turns them off).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
