"""The kernels' backends, a module each (reference, numba, cpp, cuda, cupy), defining kernels under their public names.

The dispatch table (``nnphases.kernels._dispatch``) imports them on first use. The folder is named ``impl`` and not
``backends`` because :func:`nnphases.kernels.backends` is the public listing of them, and a subpackage of that name
would replace the function on the package.
"""
