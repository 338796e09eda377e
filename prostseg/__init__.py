"""prostseg: prostate MRI segmentation with U-Net and Pix2Pix, taught in a Jupyter book.

The package holds everything the book's chapters run: reading and writing volumes
(:mod:`prostseg.io`), preprocessing (:mod:`prostseg.preprocessing`), synthetic phantom
cases (:mod:`prostseg.phantom`), the on-disk case layout (:mod:`prostseg.dataset`),
patient-level splits (:mod:`prostseg.splits`), network slices and back
(:mod:`prostseg.slices`), one recipe per kind of model (:mod:`prostseg.recipes`) and
streaming ``tf.data`` pipelines (:mod:`prostseg.pipeline`). TensorFlow is imported only
by the modules that need it.
"""

__version__ = "0.1.0"
