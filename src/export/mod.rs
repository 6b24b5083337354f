//! Export of the integer graph to other formats.
