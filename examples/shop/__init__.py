"""A small shop: its tasks (`shop.tasks`) run on Shoal's workers; `shop.producer` submits them."""
