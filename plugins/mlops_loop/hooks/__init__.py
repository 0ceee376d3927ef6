"""Airflow Connections turned into the plain client settings that core/ takes."""
