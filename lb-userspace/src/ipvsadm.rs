//! ipvsadm output formats (being written).
