# Shortcuts; the work is in image/Makefile.
.PHONY: image
image:
	$(MAKE) -C image image
