"""Open a VRT in QGIS as a user's QGIS would, identify points, render a PNG; run by Debian's
/usr/bin/python3 (python3-qgis, QGIS 3.22 on GDAL 3.6) with QT_QPA_PLATFORM=offscreen.

usage: /usr/bin/python3 qgis_probe.py VRT OUT.png SPEC_JSON  -> JSON on stdout
SPEC_JSON: {"points": [[x, y], ...] (map coordinates), "size": [w, h], "phase": "load" | "all",
            "bands": [r, g, b] (optional: a fixed -1..1 stretch instead of QGIS's default renderer)}
Prints {"valid", "width", "height", "bands", "crs", "identify": [[v1, v2, ...] per point, null = NaN],
        "png": {"distinct_colours", "opaque"}, "seconds": {...}} as JSON.
"""

import json
import math
import os
import sys
import time

from qgis.core import (
    QgsApplication,
    QgsContrastEnhancement,
    QgsMapRendererSequentialJob,
    QgsMapSettings,
    QgsMultiBandColorRenderer,
    QgsPointXY,
    QgsRaster,
    QgsRasterLayer,
)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor

vrt, png, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
app = QgsApplication([], False)
app.initQgis()
out = {"seconds": {}}
t0 = time.time()
layer = QgsRasterLayer(vrt, "tessera", "gdal")  # what Layer > Add Raster Layer does
out["valid"] = layer.isValid()
out["seconds"]["load"] = round(time.time() - t0, 3)
if layer.isValid():
    prov = layer.dataProvider()
    out.update(width=layer.width(), height=layer.height(), bands=layer.bandCount(), crs=layer.crs().authid())
    if spec.get("phase", "all") == "all":
        if spec.get("bands"):  # a fixed false-colour stretch instead of QGIS's default (bands 1-3, cumulative cut)
            r, g, b = spec["bands"]
            renderer = QgsMultiBandColorRenderer(prov, r, g, b)
            for setter, band in ((renderer.setRedContrastEnhancement, r), (renderer.setGreenContrastEnhancement, g),
                                 (renderer.setBlueContrastEnhancement, b)):
                ce = QgsContrastEnhancement(prov.dataType(band))
                ce.setContrastEnhancementAlgorithm(QgsContrastEnhancement.StretchToMinimumMaximum)
                ce.setMinimumValue(spec.get("min", -1.0))
                ce.setMaximumValue(spec.get("max", 1.0))
                setter(ce)
            layer.setRenderer(renderer)
        out["renderer"] = layer.renderer().type()
        settings = QgsMapSettings()
        settings.setLayers([layer])
        settings.setDestinationCrs(layer.crs())
        settings.setExtent(layer.extent())
        settings.setOutputSize(QSize(*spec.get("size", [400, 800])))
        settings.setBackgroundColor(QColor(255, 255, 255, 0))
        t1 = time.time()
        job = QgsMapRendererSequentialJob(settings)
        job.start()
        job.waitForFinished()
        img = job.renderedImage()
        img.save(png, "PNG")
        out["seconds"]["render"] = round(time.time() - t1, 3)
        colours, opaque = set(), 0
        for y in range(0, img.height(), 4):
            for x in range(0, img.width(), 4):
                c = img.pixel(x, y)
                if (c >> 24) & 0xFF:
                    opaque += 1
                    colours.add(c & 0xFFFFFF)
        out["png"] = {"distinct_colours": len(colours), "opaque": opaque, "sampled": (img.height() // 4) * (img.width() // 4)}
    ident = []
    t2 = time.time()
    for x, y in spec.get("points", []):
        res = prov.identify(QgsPointXY(x, y), QgsRaster.IdentifyFormatValue).results()
        ident.append([None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
                      for _, v in sorted(res.items())])
    out["identify"] = ident
    out["seconds"]["identify"] = round(time.time() - t2, 3)
print(json.dumps(out))
sys.stdout.flush()
os._exit(0)  # QGIS 3.22 can crash in exitQgis under offscreen Qt; the results are already out
