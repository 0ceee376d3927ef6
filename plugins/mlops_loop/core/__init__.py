"""Airflow-free logic of every stage; importable without Airflow (the trainer image)."""
