"""Stage 1, data: MRI cases on disk and in memory (chapters 2 and 12).

* :mod:`~prostseg.data.io` reads and writes volumes (NIfTI, NRRD, MetaImage, DICOM
  series) in one canonical order, every file checked at the door first;
* :mod:`~prostseg.data.dataset` is the case layout: which file of a case folder holds
  what, and how cases are found;
* :mod:`~prostseg.data.phantom` writes synthetic phantom cases in that layout;
* :mod:`~prostseg.data.manifests` brings public datasets into it (``prostseg data``),
  whole archives or case by case;
* :mod:`~prostseg.data.download` fetches one file over HTTP, atomically, retried and
  checked, and keeps the lock file of what was fetched.

Imports: the plumbing at the top of the package (:mod:`prostseg.errors`,
:mod:`prostseg.atomic`, :mod:`prostseg.console`) and nothing of the later stages.
"""
