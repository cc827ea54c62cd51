//! Filesystem effects: free space (statvfs), the reserve file, atomic symlink flips.
