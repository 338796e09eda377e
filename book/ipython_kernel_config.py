# IPython settings of the kernels that execute the chapters during `book/build.sh`.
# build.sh copies this file into a private IPython directory (_build/ipython) and points
# IPYTHONDIR at it, so the builder's own IPython profile plays no part in the book.
# Readers' kernels (Jupyter, Colab, papermill) never see it.

c = get_config()  # noqa: F821 - provided by IPython when it loads this file

# Native libraries write log lines straight to the process's standard error: TensorFlow's
# C++ core and the CUDA runtime through absl logging, which prints every message before
# absl::InitializeLog() whatever TF_CPP_MIN_LOG_LEVEL says ("I0000 ... port.cc] oneDNN
# custom operations are on", "cudart_stub.cc] Could not find cuda drivers", "E0000 ...
# failed call to cuInit"). ipykernel copies that file descriptor into the cells' output by
# default, which puts these lines on the pages. Leave them in the build's own log (the
# terminal that runs book/build.sh), where nothing is hidden from the person building;
# what Python code writes to sys.stderr (warnings, tracebacks) still reaches the cells.
c.IPKernelApp.capture_fd_output = False

# Figures shown inline are rendered by prostseg.figure_png, which records the size of the
# smallest text of each figure in its PNG; tests/test_book_site.py reads the record to
# check that the text is readable at the width the page shows the figure.
c.InlineBackend.print_figure_kwargs = {"bbox_inches": "tight", "backend": "module://prostseg.figure_png"}
