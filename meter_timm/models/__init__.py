"""Model families registered with timm."""
