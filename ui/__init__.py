"""Streamlit glue shared by the pages: session holder, sidebar, cards, formatting."""
