"""Operations: logging (with redaction) and metrics."""
