"""Stage 3, networks: the models, what they learn from and how a run records them (chapters 6 and 9).

* :mod:`~prostseg.networks.models`: the U-Net and the Pix2Pix generator and
  discriminator (Keras);
* :mod:`~prostseg.networks.architecture`: receptive fields, activation memory and
  drawings of the U-Net;
* :mod:`~prostseg.networks.losses` and :mod:`~prostseg.networks.metrics`: what training
  minimises and what evaluation reports;
* :mod:`~prostseg.networks.recipes`: one recipe per kind of model, everything that
  differs between the U-Net and Pix2Pix;
* :mod:`~prostseg.networks.runs`: training configurations and the files of a run folder.

Imports: :mod:`prostseg.data`, :mod:`prostseg.preparation` and the plumbing
(:mod:`prostseg.errors`, :mod:`prostseg.atomic`, :mod:`prostseg.figure_png`). ``recipes``
and ``runs`` import no TensorFlow: a recipe imports its model builder and ``tf.data``
stream only when called.
"""
