"""Distillation of a student from teacher labels."""
