"""CXR Review core library: data, preprocessing, curation, training, evaluation, inference and explanation.

Front ends (the Streamlit dashboard, the ``cxr`` command line) call this package; it never imports streamlit.
"""

__version__ = "0.1.0"
