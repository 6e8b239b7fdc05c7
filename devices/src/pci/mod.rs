//! PCI: host bridge, configuration space, BAR allocation.
