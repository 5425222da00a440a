"""Streamlit glue shared by the dashboard's pages: session state, sidebar, cached computations, charts."""
