//! Placeholder: benchmark figures, tables and the regression check.
