"""What the book's chapters import to show the package at work.

The core of :mod:`prostseg` is what a user imports to do the work; this subpackage
exists to teach it, and nothing in the core imports it. Every chapter starts with
:func:`setup` and imports the modules it shows, never single functions::

    from prostseg import book, viz
    from prostseg.data import io
    from prostseg.book import checks, tables

    chapter = book.setup("04_registration", data_dir=data_dir, output_dir=output_dir)
    print(book.describe_source(chapter.data_dir))

:func:`describe_source` and :data:`REAL_DATA_ENV` come from :mod:`prostseg.book.data`.

=========================  =========================================================
:mod:`~prostseg.book.chapter`  :func:`setup` and :class:`Chapter`: data, outputs, seed, clean-up
:mod:`~prostseg.book.data`     the phantom dataset, the shipped real study, where data came from
:mod:`~prostseg.book.checks`   registration geometry, augmentation census, stream statistics
:mod:`~prostseg.book.runs`     the finished training run a chapter can reuse
:mod:`~prostseg.book.tables`   rows as Markdown tables
:mod:`~prostseg.book.palette`  the zone and lesion colours of every figure
:mod:`~prostseg.book.widgets`  the slice browser and its static twin
=========================  =========================================================
"""

from prostseg.book.chapter import Chapter, setup
from prostseg.book.data import REAL_DATA_ENV, describe_source

__all__ = ["Chapter", "REAL_DATA_ENV", "describe_source", "setup"]
