#!/bin/sh
# rig.l2=edu-bar (scenario vfio-iommufd): edu-dma (RAM -> edu -> RAM through the IOMMU mapping of guest
# RAM) and then bar-pattern (ivshmem BAR2 both ways with L0) in one L2 run; each prints its own
# RIG-RESULT line (scenario=edu-dma, scenario=bar-pattern). Exit 0 iff both exited 0.
/bin/edu-dma
edu=$?
/bin/bar-pattern
bar=$?
echo "edu-bar: edu-dma exit $edu, bar-pattern exit $bar"
[ "$edu" = 0 ] && [ "$bar" = 0 ]
