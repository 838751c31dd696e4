"""Reports for people who oversee a study: the ethics-board report (``fedneuro report``).

``ethics`` collects what a run left behind into one validated model (every ε recomputed
from the sites' ledgers, consent coverage, audit-chain and approval checks); ``render``
writes it as ``report.json`` and a self-contained ``report.html``. Nothing is imported
here: matplotlib and Jinja2 load only when a report is rendered.
"""
