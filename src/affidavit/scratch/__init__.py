"""Throwaway database servers on 127.0.0.1: demo sources, drill targets and test fixtures."""
