"""prostseg: prostate MRI segmentation with U-Net and Pix2Pix, taught in a Jupyter book.

The package holds everything the book's chapters run: reading and writing volumes
(:mod:`prostseg.data.io`), preprocessing (:mod:`prostseg.preparation.preprocessing`), synthetic phantom
cases (:mod:`prostseg.data.phantom`), the on-disk case layout (:mod:`prostseg.data.dataset`),
patient-level splits (:mod:`prostseg.preparation.splits`), network slices and back
(:mod:`prostseg.preparation.slices`), one recipe per kind of model (:mod:`prostseg.networks.recipes`) and
streaming ``tf.data`` pipelines (:mod:`prostseg.preparation.pipeline`). TensorFlow is imported only
by the modules that need it.
"""

import os

__version__ = "0.1.0"

# oneDNN's CPU kernels train the U-Net 1.4 to 2 times as fast as TensorFlow's Eigen
# kernels (benchmarks/training_throughput.py). TensorFlow turns them on by
# default only on some CPUs and reads this variable once, when it starts: ask for them
# here, unless the user has chosen (TF_ENABLE_ONEDNN_OPTS=0 turns them off).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
