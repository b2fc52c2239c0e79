"""Presentation shared by the evidence report (L3) and the web pages (L5): the one chart
component (:mod:`affidavit.render.chart`) and the rendering of recorded texts
(:mod:`affidavit.render.text`). Pure functions of their inputs (stdlib only, layer 0): the same
values always give the same bytes, and every value that reaches the markup is escaped.
"""
